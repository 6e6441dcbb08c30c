"""Analysis of LUT-Q networks: the per-layer memory and multiplication report."""
from .report import report, Report, LayerRecord

__all__ = ['report', 'Report', 'LayerRecord']
