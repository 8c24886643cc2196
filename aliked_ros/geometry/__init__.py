"""Geometry: camera models (``camera``), rigid transforms (``transforms``), closed-form multi-view geometry
(``multiview``) and robust relative/absolute pose estimation (``pose``).

Poses: ``T_a_b`` (4x4) maps points from frame b to frame a (p_a = T_a_b p_b). Camera frames are optical frames
(REP 103: z forward, x right, y down). Units: metres, radians.
"""
