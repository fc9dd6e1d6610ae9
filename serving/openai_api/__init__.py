"""OpenAI-compatible endpoints over the fine-tuned generators: GET /v1/models, POST /v1/chat/completions,
POST /v1/completions (docs/openai_api.md)."""
