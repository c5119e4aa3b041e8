"""Request and answer translation for routes that cross vendors: OpenAI chat <-> Anthropic
Messages, OpenAI chat / embeddings -> Ollama. A request an endpoint's format cannot express
raises `Unsupported` before any call, so the router skips to the next hop."""
