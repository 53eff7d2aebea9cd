"""Channel ends and refs (``from iii.channels import ChannelReader, ChannelWriter``)."""

from iii.sdk.channels import FRAME_BYTES, Channel, ChannelReader, ChannelWriter, StreamChannelRef, WritableStream

__all__ = ["FRAME_BYTES", "Channel", "ChannelReader", "ChannelWriter", "StreamChannelRef", "WritableStream"]
