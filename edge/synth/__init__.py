"""Synthetic street scenes seen from pole-mounted cameras, with labels that know their ground position.

No public labelled data exists for ponding, material piles or makeshift structures, so the project renders
its own: objects are placed on the ground plane in metres and projected through a pinhole camera, so a box
in the image and a point on the ground always agree.
"""
