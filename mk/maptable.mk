# SPDX-License-Identifier: MIT
# maptable: see the component it builds.
