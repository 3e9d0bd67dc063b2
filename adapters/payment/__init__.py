"""The payment platform adapter: fee requests, signed callbacks, VietQR, inquiry and reconciliation."""
