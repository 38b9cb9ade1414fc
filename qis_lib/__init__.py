"""qis_lib: outcome routing over interchangeable vector stores."""
from .packet import OUTCOME_TYPES, OutcomePacket
from .router import OutcomeRouter, Synthesis, make_router

__all__ = ["OUTCOME_TYPES", "OutcomePacket", "OutcomeRouter", "Synthesis", "make_router"]
