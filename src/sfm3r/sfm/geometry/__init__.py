"""The geometry kernel: the small pieces of mathematics every stage shares, written once.

- :mod:`.similarity`: weighted closed-form rigid / similarity fits between point sets (Umeyama), batched.
- :mod:`.ransac`: the Sim(3) RANSAC (3-point samples, relative inlier rule, confidence-weighted refits).
- :mod:`.projection`: the pinhole projection (numpy or torch).
- :mod:`.triangulation`: two-view DLT, two-ray midpoint and the multi-ray least-squares point, batched.
- :mod:`.lm`: the Levenberg–Marquardt control loop with the damping policy, around caller-given
  linearise / solve / update callables.
- :mod:`.camera_model`: the camera models sfm3r writes.

Pure functions on arrays: nothing here knows about images, pairs or files.
"""
