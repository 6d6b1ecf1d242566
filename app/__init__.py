"""openrouter-proxy: an OpenAI-compatible proxy in front of OpenRouter."""

__version__ = "0.1.0"
