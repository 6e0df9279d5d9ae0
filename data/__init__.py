"""Data: MQAR and the other synthetic recall probes; the text pipeline; tokenizers."""
