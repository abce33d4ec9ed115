"""Kernel crash detection for a run: follow /dev/kmsg, turn oops/BUG/WARNING/
lockup reports into Findings with stable syzbot-style signatures, and watch
the taint mask.

    kmsg       KmsgRecord, parse_record, KmsgFollower, write_marker
    signature  classify, normalise_function, normalise_line
    taint      read_taint, taint_letters, taint_finding
"""
