"""The stores' shared (Redis) implementations, for several replicas (DESIGN §12): the
same protocols as the in-process stores, each operation one script or transaction."""
