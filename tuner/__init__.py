"""From click sessions to a better model: sessions, pairs, training, evaluation, export."""
