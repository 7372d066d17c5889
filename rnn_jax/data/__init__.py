"""Data: synthetic long-lag tasks (`synthetic`) and character corpora (`text`)."""
