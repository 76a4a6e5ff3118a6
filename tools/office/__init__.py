"""The office: the purchase system of the prepaid meters. Payments in (HTTP API, signed
provider webhooks, M-Pesa C2B, agents), token ids allocated by the store inside the sale's
transaction, delivery to the meter over MQTT (LoRaWAN through tools/bridge) re-sent until
its signed ack, the SMS fallback, ingest of the meters' signed messages, reconciliation
and alerts. Keys, tokens and signed messages come from tools/vend. See docs/office.md.
"""
