"""OpenLoRA serving (plain Python over torch; no Django): see docs/serving.md."""
from factory.serving.adapters import AdapterError, LoadedAdapter, load_adapter
from factory.serving.batcher import Batcher
from factory.serving.engine import AdapterCache, InferenceRequest, ServingConfig, ServingEngine

__all__ = ["AdapterCache", "AdapterError", "Batcher", "InferenceRequest", "LoadedAdapter", "ServingConfig", "ServingEngine",
           "load_adapter"]
