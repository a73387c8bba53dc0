"""`recsys playlist`: rank the library for the owner's taste (or around seed tracks) and write the playlist file.

The ranking and the writing are :mod:`recsys.app.ranking`'s, which `recsys radio` (the same playlist, seeded by the
track the player plays now) and `recsys eval --playlist` (the same ranking, scored on hidden ratings) share.
"""

from recsys.app.ranking import Playlist, PlaylistRequest, make_playlist

__all__ = ["Playlist", "PlaylistRequest", "make_playlist"]
