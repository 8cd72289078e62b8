"""Virtual filesystem: a tenant's tree composed of mounted providers."""
