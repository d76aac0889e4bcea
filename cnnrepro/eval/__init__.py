"""Evaluation protocols of the papers (centre, flip, 10-crop, dense and fully-convolutional
multi-scale, 144- and 150-crop, multi-crop + dense)."""

from .protocols import PROTOCOLS, TENCROP_VARIANTS, Protocol, ProtocolError, build_protocol

__all__ = ["PROTOCOLS", "TENCROP_VARIANTS", "Protocol", "ProtocolError", "build_protocol"]
