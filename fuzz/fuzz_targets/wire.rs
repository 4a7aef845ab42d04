//! Every wire message, read through the node's request-response codec as a
//! stream from a peer (length prefix, size limit, protobuf), both ways.
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use packfed_node::net::ProstCodec;
use packfed_protocol::pb;

fn read<Req, Resp>(data: &[u8], max: usize)
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let proto = StreamProtocol::new("/packfed/fuzz/1");
    let mut codec = ProstCodec::<Req, Resp>::new(max, max);
    let _ = block_on(codec.read_request(&proto, &mut futures::io::Cursor::new(data)));
    let _ = block_on(codec.read_response(&proto, &mut futures::io::Cursor::new(data)));
}

fuzz_target!(|data: &[u8]| {
    let max = packfed_node::registry::MAX_SYNC_MESSAGE_BYTES + 1024;
    read::<pb::SyncRequest, pb::SyncResponse>(data, max);
    read::<pb::BlobRequest, pb::BlobResponse>(data, max);
    read::<pb::SearchRequest, pb::SearchResponse>(data, max);
});
