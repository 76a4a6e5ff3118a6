"""The seal of a JSON settings file: a CRC-32 over the object's canonical form.

The canonical form of an object is its JSON text with the keys of every object sorted,
no white space, strings as UTF-8 with only `"`, `\\` and the control characters escaped
(as \\", \\\\ and \\u00XX), whole numbers in decimal and no fractions (a fraction has no
one spelling: money and prices are decimal strings). The seal is the member
"seal": "<8 lower-case hex digits>" of the top-level object, the CRC-32 of the canonical
form of the object without it; `dumps` writes a file as exactly that canonical form with
the seal last, so the meter, the build tools and `python -m tools.settings` write the
same bytes. `loads` checks the seal before anything reads a value: a damaged copy is
refused as a whole (ValueError), whatever the damage would have changed. See
docs/settings.md.
"""

import binascii
import json

SEAL = "seal"


def canonical(obj, field="settings"):
    """The canonical JSON text of `obj` (a str); ValueError naming a value it cannot hold."""
    out = []
    _put(obj, out, field)
    return "".join(out)


def _put(v, out, field):
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, str):
        _put_str(v, out)
    elif isinstance(v, list):
        out.append("[")
        for i in range(len(v)):
            if i:
                out.append(",")
            _put(v[i], out, field + "[" + str(i) + "]")
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for k in sorted(v):
            if not isinstance(k, str):
                raise ValueError(field + ": keys are strings")
            if not first:
                out.append(",")
            first = False
            _put_str(k, out)
            out.append(":")
            _put(v[k], out, field + "." + k)
        out.append("}")
    elif isinstance(v, float):
        raise ValueError(field + ": a whole number or a decimal string, not " + repr(v))
    else:
        raise ValueError(field + ": not a JSON value: " + repr(v))


def _put_str(s, out):
    out.append('"')
    start = 0
    for i in range(len(s)):
        c = s[i]
        if c == '"' or c == "\\" or c < " ":
            out.append(s[start:i])
            out.append("\\" + c if c >= " " else "\\u%04x" % ord(c))
            start = i + 1
    out.append(s[start:])
    out.append('"')


def seal_of(obj):
    """The seal (8 hex digits) of a top-level object, its own "seal" member left out."""
    if not isinstance(obj, dict):
        raise ValueError("settings: expected an object")
    body = {}
    for k in obj:
        if k != SEAL:
            body[k] = obj[k]
    return "%08x" % (binascii.crc32(canonical(body).encode()) & 0xFFFFFFFF)


def dumps(obj):
    """The sealed file of a top-level object (bytes): canonical, the seal last."""
    seal = seal_of(obj)
    body = {}
    for k in obj:
        if k != SEAL:
            body[k] = obj[k]
    text = canonical(body)
    sep = "," if len(text) > 2 else ""
    return (text[:-1] + sep + '"' + SEAL + '":"' + seal + '"}').encode()


def loads(data):
    """The object of a sealed file (bytes or str) without its seal; ValueError when it is
    not JSON, not an object, has no seal or its seal does not match the contents."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("settings: expected an object")
    if SEAL not in obj:
        raise ValueError("seal: missing (write the file with tools.settings seal or tech.set)")
    seal = obj.pop(SEAL)
    if not isinstance(seal, str) or seal != seal_of(obj):
        raise ValueError("seal: does not match the contents (a damaged or hand-edited copy)")
    return obj
