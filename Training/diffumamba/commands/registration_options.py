"""The registration options shared by ``propagate`` and ``convert longitudinal|simulate``.

Training cases must be registered exactly as ``propagate`` registers at inference, so both take the same
options with the same defaults.
"""

from __future__ import annotations

import argparse


def add_registration_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registration")
    group.add_argument("--rigid-only", action="store_true", help="skip the B-spline stage")
    group.add_argument("--registration-spacing", type=float, default=2.5, metavar="MM",
                       help="register copies resampled to at least this spacing (default 2.5 mm)")
    group.add_argument("--mesh-mm", type=float, default=40.0, help="B-spline control-point spacing (default 40)")
    group.add_argument("--focus-mm", type=float, default=60.0,
                       help="B-spline only on the GTV's box plus this margin (default 60 mm; 0: whole scan)")
    group.add_argument("--no-body-mask", action="store_true",
                       help="let couch and air drive the metric too (default: body only on CT)")
    group.add_argument("--registration-threads", type=int, default=1, metavar="N",
                       help="ITK threads of the registration: 1 (default) gives bit-identical results run after run; "
                            "0: all cores, faster, but the result varies in its last digits and may vary more")


def registration_settings(args: argparse.Namespace):
    from ..propagation.registration import RegistrationSettings

    if args.registration_spacing <= 0 or args.mesh_mm <= 0 or args.focus_mm < 0 or args.registration_threads < 0:
        raise ValueError("--registration-spacing and --mesh-mm must be > 0, --focus-mm and --registration-threads >= 0")
    return RegistrationSettings(spacing_mm=args.registration_spacing, deformable=not args.rigid_only,
                                mesh_mm=args.mesh_mm, focus_mm=args.focus_mm or None, mask=not args.no_body_mask,
                                threads=args.registration_threads)
