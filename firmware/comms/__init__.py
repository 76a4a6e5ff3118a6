"""The back office: MQTT over the cellular modem (mqtt/), LoRaWAN (lora/), SMS to the
customer, signed messages and the one outbox both transports queue in.

Imports tokens/, billing/, storage/; never ui/ or service/. It reaches the meter only
through the app it is given (its status, its credit path, its save).
"""
