"""HTTP gateway: the OpenAI-compatible Files and Batches API and native jobs, over Redis."""

from producers.gateway.app import create_app
from producers.gateway.config import ApiKey, GatewayConfig, load_gateway_config

__all__ = ["ApiKey", "GatewayConfig", "create_app", "load_gateway_config"]
