"""Generated protobuf and gRPC code for edgerun.serving (scripts/gen_protos.py; do not edit).

Messages are registered in `POOL`, this package's own descriptor pool, not protobuf's
process-wide default one, so they never collide with another library's copy of the same
names (tritonclient registers the KServe `inference.*` messages too).
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
