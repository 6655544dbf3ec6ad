"""Neural-ODE adapters: vector fields, solvers, injection by site name, save/load with base checks."""

from .adapter import FORMAT_VERSION, AdapterMismatchError, AdapterStack, ODEAdapter
from .ode import SOLVERS, ConvVectorField, ODEConfig, solve

__all__ = ["FORMAT_VERSION", "SOLVERS", "AdapterMismatchError", "AdapterStack", "ConvVectorField", "ODEAdapter",
           "ODEConfig", "solve"]
