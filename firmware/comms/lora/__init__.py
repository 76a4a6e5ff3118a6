"""The back office over LoRaWAN: the AppKey file, the payloads and the conversation."""
