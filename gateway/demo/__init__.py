"""`gateway demo`: every partner's simulator, the gateway and generated load in one process (`run`), and the
per-partner judges that read the gateway's topics from outside (`postal`, `tax`, `payment`, `population`)."""

from gateway.demo.run import ADAPTERS, count_lost, expected_portal_view, interleave, run_demo

__all__ = ["ADAPTERS", "count_lost", "expected_portal_view", "interleave", "run_demo"]
