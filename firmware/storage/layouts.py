"""Every released layout of the meter's state record, oldest first (docs/record.md).

A layout is a version number and its fields in record order, written as groups of
"owner name:type name:type ...". A type is a little-endian struct code: b B (1 byte),
h H (2), i I (4), q (8); "name:type=value" names what a record written before the field
existed stands for (0 when not named). firmware/storage/record.py reads a record of any
layout listed here into the newest one's fields by name and writes only the newest.

The rules (tests/test_record_layouts.py holds a copy of every released layout):
- a released layout never changes;
- a new layout is the newest one with fields appended at its end, under the next
  version number; nothing is inserted, removed, renamed or narrowed.
Version 1 (every field 64-bit) was written by four releases, told apart by their field
count; its fourth inserted the OpenPAYGO state before the app's fields, the mistake the
rules above exist to prevent. Version 2 gives each field its width and appends the
max-power protection's state.
"""

_M1 = (
    "meter stamp:q balance:q carry:q standing_carry:q debt:q energy_wh:q energy_mwh:q"
    " month_wh:q month_mwh:q month_key:q credited:q charged:q recovered:q control_state:q"
    " open_reasons:q flags:q"
)
_T1 = "tokens high:q mask_lo:q mask_hi:q failures:q fail_stamp:q"
_O1 = "openpaygo opg_count:q opg_used:q"
_A1 = "app boots:q cmd_id:q"

_M2 = (
    "meter stamp:q balance:q carry:I standing_carry:I debt:q energy_wh:q energy_mwh:H"
    " month_wh:I month_mwh:H month_key:I credited:q charged:q recovered:q control_state:B"
    " open_reasons:B flags:B"
)
_T2 = "tokens high:I mask_lo:I mask_hi:I failures:H fail_stamp:q"
_O2 = "openpaygo opg_count:I opg_used:H"
_A2 = "app boots:I cmd_id:q"
_P2 = (
    "meter mp_clock:I mp_retry_at:i=-1 mp_trips:B mp_trip1:i=-1 mp_trip2:i=-1"
    " mp_trip3:i=-1 mp_trip4:i=-1 mp_trip5:i=-1 mp_trip6:i=-1 mp_trip7:i=-1 mp_trip8:i=-1"
)

# (version, groups), oldest first; the last is the one the meter writes.
RELEASED = (
    (1, (_M1,)),
    (1, (_M1, _T1)),
    (1, (_M1, _T1, _A1)),
    (1, (_M1, _T1, _O1, _A1)),
    (2, (_M2, _T2, _O2, _A2, _P2)),
)
