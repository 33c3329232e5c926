"""Stage 6: published tables and card, the HTML report, takedowns."""
