//! Parsing URL data into a reused `Params` allocates nothing once its buffers
//! have grown: what an HTTP or UDP worker does for every announce.

use bittorrent::Params;

#[global_allocator]
static GLOBAL: counting_allocator::Counting = counting_allocator::Counting;

#[test]
fn reused_params_parse_without_allocating() {
    let requests: Vec<Vec<u8>> = (0..50u8)
        .map(|i| {
            format!(
                "/{i:032x}/announce?info_hash=%{i:02X}%12%34%56%78%9A%BC%DE%F0%12%34%56%78%9A%BC%DE%F0%12%34%56\
                 &peer_id=-LT2080-{i:012}&port={}&uploaded=0&downloaded={}&left=1000&event=started\
                 &numwant=50&compact=1&key=ABCD{i}&Passkey={i:032x}&left=999",
                6881 + u32::from(i),
                u32::from(i) * 1000
            )
            .into_bytes()
        })
        .collect();
    let mut params = Params::default();
    let mut round = |check: bool| {
        for (i, r) in requests.iter().enumerate() {
            params.parse_into(r).unwrap();
            params.set_route_param("passkey", &format!("{i:032x}")[..]);
            if check {
                assert_eq!(params.get_str("left"), Some("999"));
                assert_eq!(params.info_hashes().len(), 1);
                assert!(params.get("passkey").is_some());
            }
        }
    };
    round(true);
    // The route parameter value above is formatted outside the counted part.
    let keys: Vec<String> = (0..requests.len()).map(|i| format!("{i:032x}")).collect();
    let allocations = counting_allocator::allocations_during(|| {
        for _ in 0..5 {
            for (r, key) in requests.iter().zip(&keys) {
                params.parse_into(r).unwrap();
                params.set_route_param("passkey", key);
            }
        }
    });
    assert_eq!(allocations, 0, "allocations in 250 parses");
    assert_eq!(
        params.route_param("passkey"),
        Some(keys.last().unwrap().as_str())
    );
}
