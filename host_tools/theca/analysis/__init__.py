"""Analysis of a decoded log: the therapy summary, the clinician report, the trumpet curve."""
