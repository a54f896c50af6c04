import numpy as np

from sfm3r.types import Camera, NetView, Scene


def test_net_to_original_applies_half_pixel_and_crop():
    view = NetView(net_height=384, net_width=512, scale_x=2.0, scale_y=2.0, crop_left=3, crop_top=5)
    # Centre of network pixel (0, 0) lies at resized coordinate (0.5 + crop) -> times the scale.
    np.testing.assert_allclose(view.net_to_original(np.array([[0.0, 0.0]])), [[7.0, 11.0]])


def test_net_original_round_trip():
    view = NetView(net_height=336, net_width=512, scale_x=1.953, scale_y=1.949, crop_left=0, crop_top=4)
    xy = np.random.default_rng(0).uniform(0, 300, size=(50, 2))
    np.testing.assert_allclose(view.original_to_net(view.net_to_original(xy)), xy, atol=1e-9)


def test_net_intrinsics_to_original_scales_focal_and_shifts_centre():
    view = NetView(net_height=384, net_width=512, scale_x=2.0, scale_y=2.0, crop_left=0, crop_top=0)
    fx, fy, cx, cy = view.net_intrinsics_to_original(400.0, 400.0, 255.5, 191.5)
    assert (fx, fy) == (800.0, 800.0)
    assert (cx, cy) == (512.0, 384.0)  # the centre of a 1024x768 image in COLMAP convention


def test_scene_camera_centers():
    rot = np.eye(3)[None]
    scene = Scene(
        image_names=("a",),
        cameras=(Camera(10, 10, 5.0, 5.0, 5.0, 5.0),),
        camera_of_image=np.zeros(1, np.int64),
        rotations=rot,
        translations=np.array([[1.0, 2.0, 3.0]]),
        points_xyz=np.zeros((0, 3)),
        points_rgb=np.zeros((0, 3), np.uint8),
        points_error=np.zeros(0),
        obs_point=np.zeros(0, np.int64),
        obs_image=np.zeros(0, np.int64),
        obs_xy=np.zeros((0, 2)),
    )
    np.testing.assert_allclose(scene.camera_centers(), [[-1.0, -2.0, -3.0]])
