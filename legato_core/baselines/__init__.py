"""Baselines (GUIDE, SalUn, UNO, UNO-S, LoRA scale) and the benchmark that runs them beside LEGATO."""

from .methods import METHODS, MethodResult, run_method

__all__ = ["METHODS", "MethodResult", "run_method"]
