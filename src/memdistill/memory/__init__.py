"""Memories: exemplar buffers and their byte accounting."""
from memdistill.memory.buffer import BUFFERS, Buffer, ClassBalancedBuffer, MemoryBatch, ReservoirBuffer

__all__ = ["BUFFERS", "Buffer", "ClassBalancedBuffer", "MemoryBatch", "ReservoirBuffer"]
