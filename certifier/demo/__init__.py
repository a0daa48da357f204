"""The demo world: small real upstream repositories, recipes that change real behaviour, and a
scenario that drives the pipeline from first commit to known-good and to a rejected bad commit."""
