"""The LoRaWAN bridge of the back office (CPython): top-ups to the network server's
downlinks, the meters' 11-byte signed uplinks back to signed MQTT messages.

A LoRaWAN meter speaks no MQTT. The bridge subscribes to the back office's
`meters/<id>/topup` for the meters of its configuration and publishes each top-up as a
downlink on the network server's MQTT integration (ChirpStack v4 or The Things Stack v3);
it takes the uplinks from there, checks each one's tag under the meter's key
(firmware/comms/lora/payload.py's Receiver) and republishes it as the signed ack, event or state a
cellular meter sends, so `vend send` and the rest of the back office cannot tell the two
transports apart.

Trust: the bridge signs on the meter's behalf, after checking the meter's own tag. It
holds the vending key (back-office equipment, guarded like tools/vend and the key store)
and publishes a signed message only for an uplink whose 4-byte tag verified under that
meter's key with (boot, seq) above every uplink accepted before, so neither the network
server nor its broker can make it sign what the meter did not send. Keys, token digits
and envelope bytes are never logged.

    python -m tools.bridge run --config bridge.json
    python -m tools.bridge check --config bridge.json

tools/bridge/config.py reads the configuration, tools/bridge/mapping.py holds the
conversions (no I/O), tools/bridge/service.py the MQTT connections and the state file,
tools/bridge/cli.py the command line.
"""
