# SPDX-License-Identifier: MIT
# backends: see the component it builds.
