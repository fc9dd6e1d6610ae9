"""OpenLoRA serving (plain Python over torch; no Django): see docs/serving.md."""
from serving.openlora.adapters import AdapterError, LoadedAdapter, load_adapter
from serving.openlora.batcher import Batcher
from serving.openlora.engine import AdapterCache, InferenceRequest, ServingConfig, ServingEngine

__all__ = ["AdapterCache", "AdapterError", "Batcher", "InferenceRequest", "LoadedAdapter", "ServingConfig", "ServingEngine",
           "load_adapter"]
