"""Figures and curves of the evaluate stage and the notebooks (`plots`, `figures`)."""
