"""The back office over MQTT: the session on umqtt.simple and the conversation."""
