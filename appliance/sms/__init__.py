"""SMS line: modem driver, PDU codec and GSM 7-bit alphabet."""
