"""Adapters that give agent frameworks Engram through the interfaces they
already call. None imports its framework: each is shaped like the
framework's published interface and tested against it by contract.

- engram.integrations.langgraph.EngramStore: LangGraph's BaseStore.
- engram.integrations.mem0: Mem0's vector store and Memory.
"""
