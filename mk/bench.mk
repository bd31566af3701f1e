# SPDX-License-Identifier: MIT
# bench: see the component it builds.
