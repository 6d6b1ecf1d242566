"""Talking to OpenRouter: the transport seam, the client and its deadlines, what its
answers mean, and the relay of a committed stream."""
