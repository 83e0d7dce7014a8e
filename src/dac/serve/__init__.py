"""`dac serve`: vLLM's OpenAI-compatible server with DAC (see docs/vllm.md)."""
