"""The live patients against the model: the checks of a period of the stream store against the reference of its
training inputs a bundle keeps (`biostream.models.reference`): drift, missingness, alarm rate, live recall (`live`)."""
