"""RECAP (pi*0.6): value function -> advantage labels -> advantage-conditioned SFT (docs/recap.md)."""
