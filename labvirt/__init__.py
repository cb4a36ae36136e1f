"""labvirt: virtual TripleO/DCN labs on libvirt from tripleo-lab overrides files."""

__version__ = "0.1.0"
