"""National public service portal adapter: dossier status sync (DongBoHoSoMC, CapNhatTienDoHoSoMC)."""
