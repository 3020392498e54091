use kube::CustomResourceExt;
fn main() {
    println!("{}", serde_yaml::to_string(&osroll_api::OSUpgrade::crd()).unwrap());
    println!("---\n{}", serde_yaml::to_string(&osroll_api::OSUpgradeProgress::crd()).unwrap());
}
