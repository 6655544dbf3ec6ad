"""Neural-ODE adapters: vector fields, solvers, activation by argument on named sites, save/load with base checks."""

from .activation import Activation, SiteAdapter, active, active_adapters, install_site_hooks
from .adapter import FORMAT_VERSION, AdapterMismatchError, ODEAdapter
from .low_rank import LowRankAdapter
from .ode import SOLVERS, ConvVectorField, ODEConfig, solve

__all__ = ["FORMAT_VERSION", "SOLVERS", "Activation", "AdapterMismatchError", "ConvVectorField", "LowRankAdapter",
           "ODEAdapter", "ODEConfig", "SiteAdapter", "active", "active_adapters", "install_site_hooks", "solve"]
