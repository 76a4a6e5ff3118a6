"""The customer's side: what the display shows (screens), the display task, and what
the customer types on the keypad (keyentry).

Imports tokens/, billing/, storage/; never comms/ or service/.
"""
