"""What can go wrong talking to the modem, each in words a person can act on.

The SMS line decides on these types: a CmsError on a send means the PDU certainly did not
leave (so it may be retried or failed), while any other ModemError during a send means it may
or may not have left. SimLocked stops the line until a person acts; ModemUnavailable means the
recovery ladder ran out and the port is to be reopened from scratch.
"""

from __future__ import annotations


class ModemError(Exception):
    """Any failure talking to the modem."""


class ModemTimeout(ModemError):
    """The modem did not finish answering in time (it may have acted on the command)."""


class PromptTimeout(ModemTimeout):
    """AT+CMGS got no "> " prompt in time: the PDU was never written, so it did not leave."""


class PortLost(ModemError):
    """The serial port went away (unplugged, re-enumerated); the recovery ladder reopens it."""


class AtError(ModemError):
    """A command ended in a plain ERROR (or a vendor's equivalent)."""

    def __init__(self, command: str, response: list[str], message: str | None = None) -> None:
        self.command = command
        self.response = list(response)
        super().__init__(message or f"the modem rejected {command}")


class CmsError(ModemError):
    """+CMS ERROR: an SMS operation failed; `retryable` says whether trying later can help."""

    def __init__(self, code: int, command: str = "") -> None:
        self.code = code
        self.command = command
        self.retryable, self.reason = classify_cms(code)
        super().__init__(f"{self.reason} (error {code})")


class CmeError(ModemError):
    """+CME ERROR: the modem or SIM refused a general command."""

    def __init__(self, code: int, command: str = "") -> None:
        self.code = code
        self.command = command
        self.reason = cme_reason(code)
        super().__init__(f"{self.reason} (error {code})")


class SimLocked(ModemError):
    """The SIM needs a person: a PIN, a PUK, or a SIM at all. Never retried on our own."""

    def __init__(self, needs: str, attempts_left: int | None = None, detail: str = "") -> None:
        self.needs = needs
        self.attempts_left = attempts_left
        self.detail = detail
        super().__init__(_sim_words(needs, attempts_left, detail))


class ModemUnavailable(ModemError):
    """The port is gone or the modem does not answer, even after the recovery ladder."""


def _sim_words(needs: str, attempts_left: int | None, detail: str) -> str:
    tries = ""
    if attempts_left is not None:
        tries = f" {attempts_left} attempt{'s' if attempts_left != 1 else ''} left."
    if needs == "SIM PIN":
        head = (
            "The SIM card is locked with a PIN. Enter it on the Textbridge setup page"
            if not detail
            else f"The SIM card's PIN was not accepted ({detail}). Check it and enter it again "
            "on the setup page; Textbridge will not try it again on its own"
        )
        return f"{head}.{tries}"
    if needs == "SIM PUK":
        return (
            "The SIM card is blocked after too many wrong PINs and needs its PUK. Put the SIM in "
            "a phone and unblock it with the PUK from the SIM's card; Textbridge never tries a "
            f"PUK itself.{tries}"
        )
    if needs == "NO SIM":
        return "There is no SIM card in the modem, or it is not seated properly."
    if needs == "SIM FAILURE":
        return "The modem cannot read the SIM card (it may be damaged or not seated properly)."
    return (
        f"The SIM card needs {needs} before it can be used; unlock it in a phone and put it "
        f"back.{tries}"
    )


# 3GPP TS 27.005 3.2.5: 0-127 are network (RP) causes from TS 24.011 E.2, 128-255 are TP-FCS
# values from TS 23.040 9.2.3.22, 300-511 are the modem's own, 512 and up the vendor's.
# True means the same PDU can succeed later without anyone changing anything.
_CMS: dict[int, tuple[bool, str]] = {
    1: (False, "the number does not exist"),
    8: (False, "the mobile operator blocks sending texts from this SIM"),
    10: (False, "sending texts is barred on this SIM"),
    17: (True, "the mobile network failed to pass the message on"),
    21: (False, "the network rejected the message"),
    22: (True, "the network's message store is full"),
    27: (True, "the recipient's network is out of order"),
    28: (False, "the recipient's number is not known to the network"),
    29: (False, "the network refused the message (facility rejected)"),
    30: (False, "the recipient is not a known subscriber"),
    38: (True, "the mobile network is out of order"),
    41: (True, "the mobile network had a temporary failure"),
    42: (True, "the mobile network is congested"),
    47: (True, "the mobile network has no resources free right now"),
    50: (False, "the SIM is not allowed to send SMS (check your plan or credit)"),
    69: (False, "the network does not offer this kind of message"),
    81: (True, "the network lost track of the message"),
    95: (False, "the network found the message invalid"),
    96: (False, "the message was malformed (protocol error)"),
    97: (False, "the network does not know this kind of message (protocol error)"),
    98: (False, "the message did not fit the network's protocol state (protocol error)"),
    99: (False, "the message had an element the network does not know (protocol error)"),
    111: (False, "the network reported a protocol error"),
    127: (False, "the network could not pass the message to another network"),
    128: (False, "the message centre does not support this kind of message"),
    129: (False, "the message centre does not support silent messages"),
    130: (False, "the message centre could not replace an earlier message"),
    143: (False, "the message centre rejected the message's protocol identifier"),
    144: (False, "the message centre does not support this alphabet"),
    145: (False, "the message centre does not support this message class"),
    159: (False, "the message centre rejected the message's coding"),
    160: (False, "the message centre could not carry out the command"),
    161: (False, "the message centre does not support the command"),
    175: (False, "the message centre rejected the command"),
    176: (False, "the message centre does not support this kind of message"),
    192: (True, "the message centre is busy"),
    193: (False, "the SIM has no subscription with the message centre"),
    194: (True, "the message centre had a system failure"),
    195: (False, "the recipient's number is not valid"),
    196: (False, "the recipient is barred from receiving texts"),
    197: (False, "the message centre rejected it as a duplicate"),
    198: (False, "the message centre does not support the validity period format"),
    199: (False, "the message centre does not support the validity period"),
    208: (False, "the SIM's message storage is full"),
    209: (False, "the SIM cannot store messages"),
    210: (True, "the modem reported an internal error"),
    211: (False, "the modem's message memory is full"),
    212: (True, "the SIM is busy with a SIM toolkit action"),
    213: (True, "the SIM failed a data download"),
    255: (False, "the message was refused for an unspecified reason"),
    300: (True, "the modem reported a failure"),
    301: (True, "the modem's SMS service is busy"),
    302: (True, "the modem does not allow this right now"),
    303: (False, "the modem does not support this operation"),
    304: (False, "the modem rejected the message data (invalid PDU parameter)"),
    305: (False, "the modem rejected a text-mode parameter"),
    310: (False, "there is no SIM card in the modem"),
    311: (False, "the SIM card needs its PIN"),
    312: (False, "the SIM card needs the phone-lock PIN"),
    313: (False, "the SIM card failed"),
    314: (True, "the SIM card is busy"),
    315: (False, "the SIM card is the wrong one for this modem"),
    316: (False, "the SIM card needs its PUK"),
    317: (False, "the SIM card needs its PIN2"),
    318: (False, "the SIM card needs its PUK2"),
    320: (True, "the modem's message memory failed"),
    321: (False, "there is no message at that storage place"),
    322: (False, "the modem's message memory is full"),
    330: (False, "the modem does not know the message centre number (set modem.smsc)"),
    331: (True, "there is no mobile network service"),
    332: (True, "the mobile network did not answer in time"),
    340: (False, "the modem did not expect an acknowledgement"),
    500: (True, "the modem reported an unknown error"),
    # Vendor codes that are common enough to name; other vendor codes stay retryable.
    512: (True, "the modem reported a vendor-specific error"),
    515: (True, "the modem is still starting up or busy"),
    517: (True, "the modem's SMS service is still starting"),
}


def classify_cms(code: int) -> tuple[bool, str]:
    """(retryable, plain words) for a +CMS ERROR code."""
    known = _CMS.get(code)
    if known is not None:
        return known
    if code >= 512:
        # Vendors use these for transient states (busy, not ready) far more often than not.
        return True, f"the modem reported a vendor-specific error {code}"
    if code >= 256:
        return True, f"the modem reported error {code}"
    # An unlisted network cause: the network gave a reason it will likely give again.
    return False, f"the network refused the message (cause {code})"


# 3GPP TS 27.007 9.2.
_CME: dict[int, str] = {
    0: "the modem reported a failure",
    1: "the modem has no connection to the phone part",
    2: "the modem's link is reserved",
    3: "the modem does not allow this right now",
    4: "the modem does not support this",
    5: "the SIM needs the phone-lock PIN",
    6: "the SIM needs the first-SIM PIN",
    7: "the SIM needs the first-SIM PUK",
    10: "there is no SIM card in the modem",
    11: "the SIM card needs its PIN",
    12: "the SIM card needs its PUK",
    13: "the SIM card failed",
    14: "the SIM card is busy",
    15: "the SIM card is the wrong one for this modem",
    16: "the PIN or PUK was wrong",
    17: "the SIM card needs its PIN2",
    18: "the SIM card needs its PUK2",
    20: "the memory is full",
    21: "there is nothing at that index",
    22: "not found",
    23: "the memory failed",
    24: "the text is too long",
    25: "the text has characters the modem cannot take",
    26: "the number is too long",
    27: "the number has characters the modem cannot take",
    30: "there is no mobile network service",
    31: "the mobile network did not answer in time",
    32: "the network allows emergency calls only",
    40: "the SIM needs the network-lock PIN",
    41: "the SIM needs the network-lock PUK",
    100: "the modem reported an unknown error",
}


def cme_reason(code: int) -> str:
    """Plain words for a +CME ERROR code."""
    return _CME.get(code, f"the modem reported error {code}")
