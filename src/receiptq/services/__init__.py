"""Clients of the services the receipt jobs use (OCR, SMTP) and the pure logic
around them (parsing OCR text, matching receipts to bank transactions, rendering
and sending emails, generating receipt images). No Dramatiq here: the actors in
:mod:`receiptq.actors.receipts` call these."""
