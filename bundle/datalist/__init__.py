"""The datalist: the item schema both sides share (mining writes it, training and evaluation read it) and the patient split."""
